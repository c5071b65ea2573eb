#ifndef PROVISION_CSPAWN_H
#define PROVISION_CSPAWN_H
#include <spawn.h>

/* posix_spawn_file_actions_addchdir_np is a GNU extension that Swift does not import. */
int provision_spawn_addchdir(posix_spawn_file_actions_t *actions, const char *path);

/* Sets the nice value of the calling thread only (Linux keeps one per thread; gettid is a GNU
   extension Swift does not import). Returns 0, or -1 with errno. */
int provision_set_thread_nice(int nice);

#endif
