/*
 * tests/unit/test-linkauth.c - the remote link's key and proof
 * (broker/linkauth.h): the key file's checks (mode, owner, format), and
 * a MAC that verifies only with the same key, role, nonces and name — so
 * it can be neither reflected back, replayed with another nonce, nor
 * moved to another link.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker/linkauth.h"
#include "harness.h"

static char dir[64];

static const char *key_file(const char *name, const char *text, mode_t mode)
{
	static char path[128];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text) || fchmod(fd, mode) < 0)
		return NULL;
	close(fd);
	return path;
}

static void test_key_file(void)
{
	const char *hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1F";
	uint8_t key[LINK_KEY_LEN];
	char why[256], text[80];
	const char *p;

	snprintf(dir, sizeof(dir), "/tmp/shmb-linkauth.XXXXXX");
	CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
	snprintf(text, sizeof(text), "%s\n", hex);
	p = key_file("good", text, 0600);
	CU_ASSERT_FATAL(p != NULL);
	CU_ASSERT(linkkey_load(p, key, why, sizeof(why)) == 0);
	CU_ASSERT(key[0] == 0 && key[15] == 15 && key[31] == 0x1f);
	p = key_file("nonl", hex, 0400);
	CU_ASSERT(linkkey_load(p, key, why, sizeof(why)) == 0);
	/* others may read it: refused, and the message says what to do */
	p = key_file("open", text, 0644);
	CU_ASSERT(linkkey_load(p, key, why, sizeof(why)) == -EPERM);
	CU_ASSERT(strstr(why, "0644") && strstr(why, "0600"));
	p = key_file("group", text, 0640);
	CU_ASSERT(linkkey_load(p, key, why, sizeof(why)) == -EPERM);
	/* not 64 hex digits */
	p = key_file("short", "abcd\n", 0600);
	CU_ASSERT(linkkey_load(p, key, why, sizeof(why)) == -EINVAL && strstr(why, "64 hexadecimal"));
	snprintf(text, sizeof(text), "%.63sg", hex);
	p = key_file("nothex", text, 0600);
	CU_ASSERT(linkkey_load(p, key, why, sizeof(why)) == -EINVAL);
	snprintf(text, sizeof(text), "%s\n\n", hex);
	p = key_file("long", text, 0600);
	CU_ASSERT(linkkey_load(p, key, why, sizeof(why)) == -EINVAL);
	/* missing; a symlink is not followed */
	CU_ASSERT(linkkey_load("/nonexistent/key", key, why, sizeof(why)) == -ENOENT);
	{
		char link[160];

		snprintf(link, sizeof(link), "%s/link", dir);
		snprintf(text, sizeof(text), "%s/good", dir);
		CU_ASSERT(symlink(text, link) == 0);
		CU_ASSERT(linkkey_load(link, key, why, sizeof(why)) == -ELOOP);
	}
	{
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		CU_ASSERT(system(cmd) == 0);
	}
}

static void test_mac(void)
{
	uint8_t k1[LINK_KEY_LEN], k2[LINK_KEY_LEN], nd[WIRE_NONCE_LEN], nl[WIRE_NONCE_LEN];
	uint8_t mac[WIRE_MAC_LEN], other[WIRE_MAC_LEN];

	memset(k1, 7, sizeof(k1));
	memset(k2, 7, sizeof(k2));
	k2[31] ^= 1;
	linkauth_nonce(nd);
	linkauth_nonce(nl);
	CU_ASSERT(memcmp(nd, nl, WIRE_NONCE_LEN) != 0);
	CU_ASSERT(linkauth_mac(k1, WIRE_DIALER, nd, nl, "east", mac) == 0);
	CU_ASSERT(linkauth_verify(k1, WIRE_DIALER, nd, nl, "east", mac));
	/* a wrong key; the MAC reflected as the other role; nonces swapped
	 * (a replay into a connection with other nonces); another link */
	CU_ASSERT(!linkauth_verify(k2, WIRE_DIALER, nd, nl, "east", mac));
	CU_ASSERT(!linkauth_verify(k1, WIRE_LISTENER, nd, nl, "east", mac));
	CU_ASSERT(!linkauth_verify(k1, WIRE_DIALER, nl, nd, "east", mac));
	CU_ASSERT(!linkauth_verify(k1, WIRE_DIALER, nd, nl, "west", mac));
	/* the two sides' proofs differ, though over the same nonces */
	CU_ASSERT(linkauth_mac(k1, WIRE_LISTENER, nl, nd, "east", other) == 0);
	CU_ASSERT(memcmp(mac, other, WIRE_MAC_LEN) != 0);
	CU_ASSERT(linkauth_verify(k1, WIRE_LISTENER, nl, nd, "east", other));
	/* one flipped bit of the MAC */
	mac[5] ^= 0x10;
	CU_ASSERT(!linkauth_verify(k1, WIRE_DIALER, nd, nl, "east", mac));
	{
		char name[WIRE_NAME_MAX + 2];

		memset(name, 'n', sizeof(name) - 1);
		name[sizeof(name) - 1] = 0;
		CU_ASSERT(linkauth_mac(k1, WIRE_DIALER, nd, nl, name, mac) == -EINVAL);
		CU_ASSERT(!linkauth_verify(k1, WIRE_DIALER, nd, nl, name, mac));
	}
}

static const struct harness_test tests[] = {
	{ "key_file", test_key_file },
	{ "mac", test_mac },
	{ NULL, NULL },
};

static const struct harness_suite suites[] = {
	{ "linkauth", tests },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	return harness_main("test-linkauth", suites, argc, argv);
}
