# Run by CPack (CPACK_PRE_BUILD_SCRIPTS) on the staged tree before it becomes the package:
# strip the binary as Debian's dh_strip does (CPack's own strip leaves .comment and .note).
set(bin "${CPACK_TEMPORARY_DIRECTORY}/usr/sbin/mailkeep")
if(NOT EXISTS "${bin}")
	message(FATAL_ERROR "deb-strip: ${bin} is not staged")
endif()
execute_process(COMMAND strip --remove-section=.comment --remove-section=.note
	--strip-unneeded "${bin}" RESULT_VARIABLE r)
if(NOT r EQUAL 0)
	message(FATAL_ERROR "deb-strip: strip ${bin} failed (${r})")
endif()
