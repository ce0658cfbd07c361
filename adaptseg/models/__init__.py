"""Networks: AdaptSegNet's G (DeeplabMulti) and D (FCDiscriminator); they know no losses."""

from adaptseg.models.deeplab import BACKBONES, DeeplabMulti, build_generator, output_size
from adaptseg.models.deeplab_vgg import DeeplabVGG
from adaptseg.models.discriminator import FCDiscriminator
from adaptseg.models.pretrained import InitWeightsError, load_init_weights

__all__ = [
    "BACKBONES",
    "DeeplabMulti",
    "DeeplabVGG",
    "FCDiscriminator",
    "InitWeightsError",
    "build_generator",
    "load_init_weights",
    "output_size",
]
