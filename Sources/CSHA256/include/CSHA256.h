#ifndef PROVISION_CSHA256_H
#define PROVISION_CSHA256_H
#include <stddef.h>

/* SHA-256 from libcrypto, whose assembly uses the CPU's SHA extensions where present. The context
   is a plain struct so a download can save it beside the partial file and continue hashing after a
   restart without reading the prefix again. */

typedef struct {
    unsigned char bytes[128];
} provision_sha256_ctx;

int provision_sha256_context_fits(void);
void provision_sha256_init(provision_sha256_ctx *context);
void provision_sha256_update(provision_sha256_ctx *context, const void *data, size_t length);
void provision_sha256_final(provision_sha256_ctx *context, unsigned char digest[32]);

#endif
