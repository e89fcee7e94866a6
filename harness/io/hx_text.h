// hx_text.h — reading a whole text file with the checks every text input gets. Depends on
// kernels/qp*.h only.
#ifndef HX_TEXT_H
#define HX_TEXT_H

#include <stddef.h>

// Reads a whole text file. Empty files, files with NUL bytes and text that is not valid UTF-8
// are refused, with the file and the cause in err. *buf malloc'd (NUL-terminated), *len its
// length. 0, QP_EIO, QP_ENOMEM or QP_EFORMAT.
int hx_read_text(const char *path, char **buf, size_t *len, char *err);

// Reads a whole file as it is (empty, NUL bytes and any encoding accepted), for readers that
// check line by line and name the line. *buf malloc'd (NUL-terminated), *len its length. 0,
// QP_EIO ("cannot read 'PATH': CAUSE", e.g. a directory) or QP_ENOMEM.
int hx_read_bytes(const char *path, char **buf, size_t *len, char *err);

#endif
