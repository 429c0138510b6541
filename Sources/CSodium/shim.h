#ifndef FIELDSYNC_CSODIUM_SHIM_H
#define FIELDSYNC_CSODIUM_SHIM_H
#include <sodium.h>
#endif
