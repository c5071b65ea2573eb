#ifndef PROVISION_CCURL_SHIM_H
#define PROVISION_CCURL_SHIM_H
#include <curl/curl.h>
#endif
