"""Applications: Panorama-style application directories built into signed bundles.

``build`` validates an application directory and signs it into
``apps/<name>-<version>.app`` (the format of ``fleet_runtime.appbundle``);
``store`` inspects, verifies and lists bundles; ``panorama`` turns a
panorama-cli project into an application directory.
"""
