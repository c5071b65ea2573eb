#ifndef PROVISION_CHIREDIS_SHIM_H
#define PROVISION_CHIREDIS_SHIM_H
#include <hiredis/hiredis.h>
#endif
