# Run by CPack (CPACK_PRE_BUILD_SCRIPTS) on the staged tree before it becomes the package:
# refuse a tree without the system integration (a build not configured for /usr), and strip
# the binary as Debian's dh_strip does (CPack's own strip leaves .comment and .note).
set(unit "${CPACK_TEMPORARY_DIRECTORY}/lib/systemd/system/mailkeep.service")
if(NOT EXISTS "${unit}")
	message(FATAL_ERROR "deb-strip: no systemd unit staged: the package needs a build "
		"configured with -DCMAKE_INSTALL_PREFIX=/usr (packaging/build-deb.sh does that)")
endif()
set(bin "${CPACK_TEMPORARY_DIRECTORY}/usr/sbin/mailkeep")
if(NOT EXISTS "${bin}")
	message(FATAL_ERROR "deb-strip: ${bin} is not staged")
endif()
execute_process(COMMAND strip --remove-section=.comment --remove-section=.note
	--strip-unneeded "${bin}" RESULT_VARIABLE r)
if(NOT r EQUAL 0)
	message(FATAL_ERROR "deb-strip: strip ${bin} failed (${r})")
endif()
