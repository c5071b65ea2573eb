#ifndef PROVISION_CSPAWN_H
#define PROVISION_CSPAWN_H
#include <spawn.h>

/* posix_spawn_file_actions_addchdir_np is a GNU extension that Swift does not import. */
int provision_spawn_addchdir(posix_spawn_file_actions_t *actions, const char *path);

#endif
