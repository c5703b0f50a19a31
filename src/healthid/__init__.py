"""healthid: an open-source GesundheitsID platform (sectoral IdP and wallet backend)."""

__version__ = "0.1.0"
