#ifndef PROVISION_CSHA256_H
#define PROVISION_CSHA256_H
#include <stddef.h>

/* SHA-256 from libcrypto, whose assembly uses the CPU's SHA extensions where present. A download
   saves the state beside its partial file and continues hashing after a restart without reading
   the prefix again; what it saves is the project's own format (below), never libcrypto's struct. */

typedef struct {
    unsigned char bytes[128];
} provision_sha256_ctx;

int provision_sha256_context_fits(void);
void provision_sha256_init(provision_sha256_ctx *context);
void provision_sha256_update(provision_sha256_ctx *context, const void *data, size_t length);
void provision_sha256_final(provision_sha256_ctx *context, unsigned char digest[32]);

/* The saved state, format 1: the byte 1, the eight chaining values as big-endian 32-bit words, the
   count of bytes hashed as a big-endian 64-bit word, the number n (0-63) of bytes waiting for a
   full block, then those n bytes: 42 + n bytes in all (at most PROVISION_SHA256_STATE_MAX). */
#define PROVISION_SHA256_STATE_MAX 105
size_t provision_sha256_export(const provision_sha256_ctx *context, unsigned char out[PROVISION_SHA256_STATE_MAX]);
/* Returns 1 and sets the context when `state` is a valid format-1 state, else 0. */
int provision_sha256_import(provision_sha256_ctx *context, const unsigned char *state, size_t length);

#endif
