# Writes SourceHash.h: a SHA-256 over the dialect/pass/C-API sources, so the
# compile-cache key is the same on every machine that builds the same code.
# Usage: cmake -DOUT=<header> -DSRCS="<a|b|...>" -P SourceHash.cmake
string(REPLACE "|" ";" SRCS "${SRCS}")
list(SORT SRCS)
set(_all "")
foreach(f IN LISTS SRCS)
  file(SHA256 "${f}" _h)
  get_filename_component(_name "${f}" NAME)
  string(APPEND _all "${_name}:${_h};")
endforeach()
string(SHA256 _hash "${_all}")
set(_text "#define FLEXATTN_SOURCE_HASH \"${_hash}\"\n")
if(EXISTS "${OUT}")
  file(READ "${OUT}" _old)
endif()
if(NOT "${_old}" STREQUAL "${_text}")
  file(WRITE "${OUT}" "${_text}")
endif()
