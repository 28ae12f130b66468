"""The four 3DDR U-Nets (arXiv 2011.03303) in PyTorch, one skeleton parameterised by its block.

Offers :func:`build_model`, :class:`UNet3DDR`, :func:`count_parameters`,
:func:`check_grid_shape`, :func:`efficient_state_from_faithful` and
:data:`MODEL_NAMES` (3ddr_unet, res_3ddr_unet, inception_res_3ddr_unet,
asymm_inception_res_3ddr_unet).
"""

from seacast.config import MODEL_NAMES
from seacast.models.convert import efficient_state_from_faithful
from seacast.models.unet3ddr import UNet3DDR, build_model, check_grid_shape, count_parameters

__all__ = [
    "MODEL_NAMES",
    "UNet3DDR",
    "build_model",
    "check_grid_shape",
    "count_parameters",
    "efficient_state_from_faithful",
]
