/*
 * tests/unit/lane-env.c - a register of lanes in a fresh directory (see
 * lane-env.h).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "lane-env.h"

static int session_dir(void *ctx, uint64_t session)
{
	struct lane_env *e = ctx;
	char name[32];

	if (session >= 64)
		return -1;
	if (e->sdir[session] < 0) {
		snprintf(name, sizeof(name), "%llu", (unsigned long long)session);
		mkdirat(e->sessions, name, 0700);
		e->sdir[session] = openat(e->sessions, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	}
	return e->sdir[session];
}

void lane_env_open(struct lane_env *e, uint64_t ring_size)
{
	snprintf(e->dir, sizeof(e->dir), "/tmp/shmb-lanes-XXXXXX");
	CU_ASSERT_FATAL(mkdtemp(e->dir) != NULL);
	e->root = open(e->dir, O_RDONLY | O_DIRECTORY);
	mkdirat(e->root, "lanes", 0700);
	mkdirat(e->root, "sessions", 0700);
	e->lanes = openat(e->root, "lanes", O_RDONLY | O_DIRECTORY);
	e->sessions = openat(e->root, "sessions", O_RDONLY | O_DIRECTORY);
	CU_ASSERT_FATAL(e->root >= 0 && e->lanes >= 0 && e->sessions >= 0);
	for (int i = 0; i < 64; i++)
		e->sdir[i] = -1;
	lanes_init(&e->g, e->lanes, 42);
	e->g.ring_size = ring_size;
	e->g.session_dir = session_dir;
	e->g.ctx = e;
}

void lane_env_close(struct lane_env *e)
{
	char cmd[128];

	lanes_free(&e->g);
	for (int i = 0; i < 64; i++)
		if (e->sdir[i] >= 0)
			close(e->sdir[i]);
	close(e->lanes);
	close(e->sessions);
	close(e->root);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", e->dir);
	CU_ASSERT(system(cmd) == 0);
}
