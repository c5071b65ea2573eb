#ifndef PROVISION_CFILESYNC_H
#define PROVISION_CFILESYNC_H
#include <sys/types.h>

/* Starts write-back of a file range without waiting (sync_file_range with SYNC_FILE_RANGE_WRITE,
   a GNU extension Swift does not import), so the final fsync of a large download has little left. */
int provision_start_writeback(int fd, off_t offset, off_t length);

/* Waits until a file range is on disk (sync_file_range WAIT_BEFORE|WRITE|WAIT_AFTER), then drops it
   from the page cache (posix_fadvise DONTNEED); 0, or an errno. */
int provision_release_written(int fd, off_t offset, off_t length);

#endif
