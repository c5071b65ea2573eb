#ifndef PROVISION_CFILESYNC_H
#define PROVISION_CFILESYNC_H
#include <sys/types.h>

/* Starts write-back of a file range without waiting (sync_file_range with SYNC_FILE_RANGE_WRITE,
   a GNU extension Swift does not import), so the final fsync of a large download has little left. */
int provision_start_writeback(int fd, off_t offset, off_t length);

#endif
