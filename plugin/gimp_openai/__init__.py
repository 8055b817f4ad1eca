"""gimp-openai engine: edit a selection in place, make variations and generate images with the OpenAI Images API.

Pure Python 3; no GIMP import anywhere in this package. The GIMP hosts call it as a subprocess.
"""

__version__ = "0.1.0"
