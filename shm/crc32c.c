/*
 * shm/crc32c.c - CRC32C, reflected polynomial 0x82f63b78, one byte at a
 * time from a table built on first use.  Headers are 128 bytes, so speed
 * does not matter here; correctness is pinned by the standard check value
 * ("123456789" -> 0xe3069283) in the tests.
 */
#include <pthread.h>

#include "shm/crc32c.h"

static uint32_t crc32c_table[256];
static pthread_once_t crc32c_once = PTHREAD_ONCE_INIT;

static void crc32c_build(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		crc32c_table[i] = c;
	}
}

uint32_t crc32c(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	pthread_once(&crc32c_once, crc32c_build);
	crc = ~crc;
	while (len--)
		crc = crc32c_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}
