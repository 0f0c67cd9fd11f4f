/*
 * broker/linkauth.c - see linkauth.h.  The HMAC is libsodium's
 * (crypto_auth_hmacsha256); nothing here is home-made cryptography.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker/linkauth.h"

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int linkkey_load(const char *path, uint8_t key[LINK_KEY_LEN], char *why, size_t whylen)
{
	char text[2 * LINK_KEY_LEN + 3];
	struct stat st;
	ssize_t n;
	int fd, r = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		r = -errno;
		snprintf(why, whylen, "%s: %s", path, strerror(-r));
		return r;
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		snprintf(why, whylen, "%s: %s", path, strerror(-r));
	} else if (!S_ISREG(st.st_mode)) {
		r = -EINVAL;
		snprintf(why, whylen, "%s: not a regular file", path);
	} else if (st.st_uid != geteuid()) {
		r = -EPERM;
		snprintf(why, whylen, "%s: owned by uid %u, not by this broker's uid %u", path,
			 (unsigned)st.st_uid, (unsigned)geteuid());
	} else if (st.st_mode & 077) {
		r = -EPERM;
		snprintf(why, whylen, "%s: mode %04o lets others read the key; it must be 0600", path,
			 (unsigned)(st.st_mode & 07777));
	}
	if (r < 0) {
		close(fd);
		return r;
	}
	n = read(fd, text, sizeof(text));
	close(fd);
	if (n == 2 * LINK_KEY_LEN + 1 && text[n - 1] == '\n')
		n--;
	if (n != 2 * LINK_KEY_LEN) {
		sodium_memzero(text, sizeof(text));
		snprintf(why, whylen, "%s: a key is 64 hexadecimal digits (openssl rand -hex 32)", path);
		return -EINVAL;
	}
	for (unsigned i = 0; i < LINK_KEY_LEN; i++) {
		int hi = hexval(text[2 * i]), lo = hexval(text[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			sodium_memzero(text, sizeof(text));
			sodium_memzero(key, LINK_KEY_LEN);
			snprintf(why, whylen, "%s: a key is 64 hexadecimal digits (openssl rand -hex 32)",
				 path);
			return -EINVAL;
		}
		key[i] = (uint8_t)(hi << 4 | lo);
	}
	sodium_memzero(text, sizeof(text));
	return 0;
}

void linkauth_nonce(uint8_t nonce[WIRE_NONCE_LEN])
{
	randombytes_buf(nonce, WIRE_NONCE_LEN);
}

int linkauth_mac(const uint8_t key[LINK_KEY_LEN], enum wire_role prover,
		 const uint8_t prover_nonce[WIRE_NONCE_LEN], const uint8_t verifier_nonce[WIRE_NONCE_LEN],
		 const char *name, uint8_t mac[WIRE_MAC_LEN])
{
	uint8_t in[WIRE_AUTH_INPUT_MAX];
	int n = wire_auth_input(in, sizeof(in), prover, prover_nonce, verifier_nonce, name);

	static_assert(crypto_auth_hmacsha256_KEYBYTES == LINK_KEY_LEN, "key size");
	static_assert(crypto_auth_hmacsha256_BYTES == WIRE_MAC_LEN, "mac size");
	if (n < 0)
		return n;
	crypto_auth_hmacsha256(mac, in, (unsigned long long)n, key);
	return 0;
}

bool linkauth_verify(const uint8_t key[LINK_KEY_LEN], enum wire_role prover,
		     const uint8_t prover_nonce[WIRE_NONCE_LEN],
		     const uint8_t verifier_nonce[WIRE_NONCE_LEN], const char *name,
		     const uint8_t mac[WIRE_MAC_LEN])
{
	uint8_t in[WIRE_AUTH_INPUT_MAX];
	int n = wire_auth_input(in, sizeof(in), prover, prover_nonce, verifier_nonce, name);

	return n >= 0 && crypto_auth_hmacsha256_verify(mac, in, (unsigned long long)n, key) == 0;
}
