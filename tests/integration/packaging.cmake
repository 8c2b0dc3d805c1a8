# Packaging tests (packaging/). None needs root.
# packaging_man: the man pages against `mailkeep --settings` and `--help`; the Postfix example
# against the example config.
mk_python_test(packaging_man ${CMAKE_SOURCE_DIR}/tests/integration/packaging_man.py TIMEOUT 120)
# mk-testd runs the same daemon code (config table, --settings) and links only mk_core: the
# man-page check falls back to it while the full binary does not link.
set_property(TEST packaging_man APPEND PROPERTY ENVIRONMENT "MK_TESTD=$<TARGET_FILE:mk-testd>")

# packaging_cert_deploy: packaging/cert-deploy (certbot/acme.sh hook) with a real reload.
mk_python_test(packaging_cert_deploy
	${CMAKE_SOURCE_DIR}/tests/integration/packaging_cert_deploy.py TIMEOUT 300)

# packaging_migrate: mailkeep(8)'s Maildir migration (UIDLs kept) and Postfix-style delivery.
mk_python_test(packaging_migrate ${CMAKE_SOURCE_DIR}/tests/integration/packaging_migrate.py
	TIMEOUT 300)

# packaging_sandbox_root: the unit's CapabilityBoundingSet and NoNewPrivileges applied with
# setpriv to a root-started daemon (bind below 1024, drop, PAM). Root only; skips otherwise.
mk_python_test(packaging_sandbox_root
	${CMAKE_SOURCE_DIR}/tests/integration/packaging_sandbox_root.py TIMEOUT 120)

# packaging_deb: packaging/build-deb.sh's package checked with dpkg-deb, lintian,
# systemd-analyze and an install into a throwaway root. It needs packaging/ in the build (the
# top-level add_subdirectory(packaging), before add_subdirectory(tests)).
if(TARGET mk-packaging-files)
	mk_python_test(packaging_deb ${CMAKE_SOURCE_DIR}/tests/integration/packaging_deb.py
		TIMEOUT 900)
else()
	message(WARNING "packaging/ is not in the build (add_subdirectory(packaging) in the top-level "
		"CMakeLists.txt): the packaging_deb test is not registered")
endif()
