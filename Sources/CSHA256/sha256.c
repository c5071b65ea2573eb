#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>
#include <string.h>
#include "CSHA256.h"

int provision_sha256_context_fits(void) {
    return sizeof(SHA256_CTX) <= sizeof(provision_sha256_ctx);
}

void provision_sha256_init(provision_sha256_ctx *context) {
    memset(context, 0, sizeof(*context));
    SHA256_Init((SHA256_CTX *)context->bytes);
}

void provision_sha256_update(provision_sha256_ctx *context, const void *data, size_t length) {
    SHA256_Update((SHA256_CTX *)context->bytes, data, length);
}

void provision_sha256_final(provision_sha256_ctx *context, unsigned char digest[32]) {
    SHA256_Final(digest, (SHA256_CTX *)context->bytes);
}
