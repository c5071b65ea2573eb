#define _GNU_SOURCE
#include <spawn.h>
#include <sys/resource.h>
#include <unistd.h>
#include "CSpawn.h"

int provision_spawn_addchdir(posix_spawn_file_actions_t *actions, const char *path) {
    return posix_spawn_file_actions_addchdir_np(actions, path);
}

int provision_set_thread_nice(int nice) {
    return setpriority(PRIO_PROCESS, (id_t)gettid(), nice);
}
