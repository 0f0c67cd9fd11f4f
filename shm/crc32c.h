/*
 * shm/crc32c.h - CRC32C (Castagnoli), the checksum of segment headers
 * (and of link frames, docs/design/links.md).  SSE4.2's crc32 instruction where
 * the CPU has it, else a table.
 */
#ifndef SHM_CRC32C_H
#define SHM_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* crc32c(0, buf, len) starts a checksum; pass a result back in to extend it. */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

/* The same by the table alone, whatever the CPU (for the tests). */
uint32_t crc32c_portable(uint32_t crc, const void *buf, size_t len);

#endif
