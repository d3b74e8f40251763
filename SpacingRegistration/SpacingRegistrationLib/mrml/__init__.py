"""The MRML layer: the bridge between SimpleITK images/transforms and MRML nodes, the study nodes, offscreen
rendering and the Logic's library class. It imports ``slicer`` and ``vtk``, never ``qt`` (Testing/test_layering.py),
so it runs in a headless Python (slicer-core) as well as inside Slicer. Nothing is imported here: import the
submodules themselves."""
