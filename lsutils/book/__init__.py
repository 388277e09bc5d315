"""The book's experiments: one module per chapter (settings, run lists, tables and figures).

These modules import the core library (``lsutils``) and are never imported by it: the core is what a reader
reuses in their own project, ``lsutils.book`` is the recipe for this book's chapters (as torchvision's
``references/`` folder is for its models). Nothing here is star-exported; a chapter imports its own module::

    from lsutils.book import calibration as ch
"""
