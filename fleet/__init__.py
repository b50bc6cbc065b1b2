"""edgefleet controller: provision, update and watch fleets of edge vision appliances."""

__version__ = "0.1.0"
