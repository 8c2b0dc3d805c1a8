# Packaging tests (packaging/): the man pages against `mailkeep --settings`. None needs root.
mk_python_test(packaging_man ${CMAKE_SOURCE_DIR}/tests/integration/packaging_man.py TIMEOUT 120)
# mk-testd runs the same daemon code (config table, --settings) and links only mk_core: the
# man-page check falls back to it while the full binary does not link.
set_property(TEST packaging_man APPEND PROPERTY ENVIRONMENT "MK_TESTD=$<TARGET_FILE:mk-testd>")
