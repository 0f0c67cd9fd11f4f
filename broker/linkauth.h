/*
 * broker/linkauth.h - the remote link's pre-shared key and its proof
 * (issue 6, docs/design/links.md, docs/links.md): the key file, the nonces,
 * and the HMAC-SHA256 (libsodium) each side sends in its AUTH frame.
 *
 * Each side proves it knows the key by a MAC over a label, its own role,
 * its own nonce, then the peer's nonce, and the link's name
 * (wire_auth_input()): a MAC cannot be reflected back (the role differs),
 * replayed on another connection (the peer's fresh nonce differs) or moved
 * to another link (the name).
 */
#ifndef BROKER_LINKAUTH_H
#define BROKER_LINKAUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/wire.h"

#define LINK_KEY_LEN 32u

/*
 * Read the key: a regular file owned by this process's uid, of mode 0600
 * or stricter, holding 64 hexadecimal digits (`openssl rand -hex 32`),
 * optionally followed by a newline.  0, or -errno with the reason in why.
 */
int linkkey_load(const char *path, uint8_t key[LINK_KEY_LEN], char *why, size_t whylen);

/* A fresh nonce for one handshake. */
void linkauth_nonce(uint8_t nonce[WIRE_NONCE_LEN]);

/* The MAC `prover` sends: 0, or -EINVAL (a name too long). */
int linkauth_mac(const uint8_t key[LINK_KEY_LEN], enum wire_role prover,
		 const uint8_t prover_nonce[WIRE_NONCE_LEN], const uint8_t verifier_nonce[WIRE_NONCE_LEN],
		 const char *name, uint8_t mac[WIRE_MAC_LEN]);

/* Is mac the one `prover` owes for these nonces and name?  In constant time. */
bool linkauth_verify(const uint8_t key[LINK_KEY_LEN], enum wire_role prover,
		     const uint8_t prover_nonce[WIRE_NONCE_LEN],
		     const uint8_t verifier_nonce[WIRE_NONCE_LEN], const char *name,
		     const uint8_t mac[WIRE_MAC_LEN]);

#endif
