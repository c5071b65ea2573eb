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

size_t provision_sha256_export(const provision_sha256_ctx *context, unsigned char out[PROVISION_SHA256_STATE_MAX]) {
    const SHA256_CTX *c = (const SHA256_CTX *)context->bytes;
    size_t at = 0;
    out[at++] = 1;
    for (int i = 0; i < 8; i++) {
        out[at++] = (unsigned char)(c->h[i] >> 24);
        out[at++] = (unsigned char)(c->h[i] >> 16);
        out[at++] = (unsigned char)(c->h[i] >> 8);
        out[at++] = (unsigned char)(c->h[i]);
    }
    unsigned long long bits = ((unsigned long long)c->Nh << 32) | (unsigned long long)c->Nl;
    unsigned long long count = bits / 8;
    for (int i = 7; i >= 0; i--) out[at++] = (unsigned char)(count >> (8 * i));
    unsigned int waiting = c->num & 63;
    out[at++] = (unsigned char)waiting;
    memcpy(out + at, c->data, waiting);
    return at + waiting;
}

int provision_sha256_import(provision_sha256_ctx *context, const unsigned char *state, size_t length) {
    if (length < 42 || state[0] != 1) return 0;
    unsigned int waiting = state[41];
    if (waiting > 63 || length != 42 + (size_t)waiting) return 0;
    unsigned long long count = 0;
    for (int i = 0; i < 8; i++) count = (count << 8) | state[33 + i];
    if (count % 64 != waiting || count > (~0ULL >> 3)) return 0;
    provision_sha256_init(context);
    SHA256_CTX *c = (SHA256_CTX *)context->bytes;
    for (int i = 0; i < 8; i++) {
        const unsigned char *w = state + 1 + 4 * i;
        c->h[i] = ((SHA_LONG)w[0] << 24) | ((SHA_LONG)w[1] << 16) | ((SHA_LONG)w[2] << 8) | (SHA_LONG)w[3];
    }
    unsigned long long bits = count * 8;
    c->Nl = (SHA_LONG)(bits & 0xffffffffULL);
    c->Nh = (SHA_LONG)(bits >> 32);
    memcpy(c->data, state + 42, waiting);
    c->num = waiting;
    return 1;
}
