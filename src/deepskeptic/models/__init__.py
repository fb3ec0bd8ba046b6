"""Every model module, imported explicitly so that the registry is complete."""
from deepskeptic.models import image  # noqa: F401
from deepskeptic.models import forecast  # noqa: F401
from deepskeptic.models import speech  # noqa: F401
from deepskeptic.models import gan  # noqa: F401
from deepskeptic.models import text  # noqa: F401
from deepskeptic.models.registry import count_params, create, names, spec  # noqa: F401
