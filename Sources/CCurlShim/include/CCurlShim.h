#ifndef PROVISION_CCURLSHIM_H
#define PROVISION_CCURLSHIM_H
#include <curl/curl.h>

/* Typed entry points for libcurl's variadic calls, which Swift cannot import. */

/* CURLVERSION_NOW is a macro over an enum value that does not import. */
curl_version_info_data *provision_curl_version_info(void);

CURLcode provision_easy_setopt_long(CURL *handle, CURLoption option, long value);
CURLcode provision_easy_setopt_pointer(CURL *handle, CURLoption option, void *value);
CURLcode provision_easy_setopt_string(CURL *handle, CURLoption option, const char *value);
CURLcode provision_easy_setopt_write_callback(CURL *handle,
    size_t (*callback)(char *ptr, size_t size, size_t nmemb, void *userdata));
CURLcode provision_easy_setopt_header_callback(CURL *handle,
    size_t (*callback)(char *ptr, size_t size, size_t nmemb, void *userdata));
CURLcode provision_easy_setopt_xferinfo_callback(CURL *handle,
    int (*callback)(void *clientp, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow));

CURLcode provision_easy_getinfo_long(CURL *handle, CURLINFO info, long *value);

/* Asked about the address of every connection before its socket is made; nonzero allows it. */
typedef int (*provision_address_check)(void *context, const struct sockaddr *address, unsigned int length);

/* What the open-socket callback calls; owned by the caller, alive as long as the handle uses it. */
struct provision_connection_guard {
    provision_address_check check;
    void *context;
};

/* Installs an open-socket callback on `handle` that refuses (CURL_SOCKET_BAD) every connection whose
   address `guard->check` does not allow: it sees the address libcurl really connects to, for every
   connection of every request, redirects and reconnects included. Set again after curl_easy_reset. */
CURLcode provision_easy_guard_connections(CURL *handle, struct provision_connection_guard *guard);

CURLMcode provision_multi_setopt_long(CURLM *multi, CURLMoption option, long value);

#endif
