"""Networks: AdaptSegNet's G (DeeplabMulti, DeeplabVGG) and D (FCDiscriminator); they know no
losses."""

from adaptseg.models.deeplab import BACKBONES, DeeplabMulti, output_size
from adaptseg.models.deeplab_vgg import DeeplabVGG
from adaptseg.models.discriminator import FCDiscriminator
from adaptseg.models.generator import Generator, build_generator
from adaptseg.models.pretrained import (
    InitWeightsError,
    load_discriminator_weights,
    load_init_weights,
)

__all__ = [
    "BACKBONES",
    "DeeplabMulti",
    "DeeplabVGG",
    "FCDiscriminator",
    "Generator",
    "InitWeightsError",
    "build_generator",
    "load_discriminator_weights",
    "load_init_weights",
    "output_size",
]
