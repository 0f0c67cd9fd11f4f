# shmb - the one build entry.  `make help` lists the targets.
#
# Everything is built into $(BUILD) (default build/).  `make asan` builds
# the same sources with AddressSanitizer and UBSan into build-asan/ and
# runs the unit and hostile-input suites there; `make tsan` builds them with
# ThreadSanitizer into build-tsan/ and runs the threaded tests.

VERSION  := 0.4.0
SOVER    := 0
PREFIX   ?= /usr/local
DESTDIR  ?=
BUILD    ?= build

CC       ?= cc
LD       ?= ld
OBJCOPY  ?= objcopy
CFLAGS   ?= -O2 -g
override CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fPIC -fvisibility=hidden \
            -I. -Ilibclient/include -I$(BUILD)/bpf $(EXTRA_CFLAGS)
override LDFLAGS += $(EXTRA_LDFLAGS)
LDLIBS   += -lpthread

SHM_SRC  := shm/ring.c shm/futex.c shm/segment.c shm/crc32c.c shm/hold.c shm/lane-rw.c
LIB_SRC  := libclient/shmb.c libclient/client.c libclient/client-admin.c \
            libclient/conn.c libclient/conn-thread.c libclient/conn-handshake.c \
            libclient/lifecycle.c libclient/registry.c libclient/sigbus.c libclient/lanew.c \
            libclient/laneset.c libclient/client-lanes.c
BROKER_SRC := broker/main.c broker/loop.c broker/ctl.c broker/ctl-admin.c broker/session.c broker/session-tx.c broker/topic.c \
              broker/adopt.c broker/router.c broker/dlv.c broker/state.c broker/log.c broker/guard.c broker/harden.c \
              broker/link.c broker/link-data.c broker/link-dial.c broker/link-file.c broker/link-accept.c \
              broker/linkauth.c broker/linkproto.c broker/wire.c broker/replay.c \
              broker/exit.c broker/exit-bpf.c broker/exit-pidfd.c broker/lanefile.c broker/lanes.c broker/ctl-lanes.c \
              broker/lanes-adopt.c broker/lanes-bridge.c broker/breader.c broker/lanes-spill.c

UNIT_TESTS := test-layout test-lane-rw test-lane-edges test-ring test-futex test-segment test-hostile test-uring-futex test-replay test-lifecycle test-registry test-wire test-linkauth test-fault-proxy test-linkproto \
              test-state test-router test-sigbus test-lanefile test-lanereg test-lanew test-laneset
MP_TESTS   := test-mp-ring
INT_TESTS  := test-broker test-restart test-redial test-admin test-links test-lanes test-lib-lanes
BENCHES    := bench-ring bench-lane bench-broker bench-ops bench-links

SHM_OBJ  := $(SHM_SRC:%.c=$(BUILD)/obj/%.o)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
# what a client program runs: the public libraries hold these and nothing else
CLIENT_OBJ := $(SHM_OBJ) $(LIB_OBJ)
# Each object's headers come from the compiler (-MMD -MP: a .d beside the
# .o, and a header that goes away does not stop the build).
DEPFLAGS := -MMD -MP
# tests/'s own headers (harness.h, stream.h...) are for the tests alone
$(BUILD)/obj/tests/%.o: TEST_INC := -Itests

.SECONDARY:
.PHONY: all test test-unit test-hostile-broker asan tsan test-tsan test-links-short test-lanes-int bench run demo ring-demo install clean help
all: $(BUILD)/libshmb.so $(BUILD)/libshmb.a $(BUILD)/libshmb-internal.a $(BUILD)/shmb.pc \
     $(BUILD)/ring-demo $(BUILD)/shmbd $(BUILD)/shmbctl

help:
	@echo "make            build libshmb.so, libshmb.a, shmb.pc and the tools into $(BUILD)/"
	@echo "make test       build and run every test suite (unit, hostile input, multi-process, broker)"
	@echo "make asan       the unit and hostile-input suites under ASan + UBSan"
	@echo "make tsan       the threaded unit and client tests (and shmbd) under ThreadSanitizer"
	@echo "make bench      the benchmarks beside iceoryx, Mosquitto, ZeroMQ, nng (QUICK=1: a short run)"
	@echo "make demo       a demo to watch: a subscriber SIGKILLed mid-stream loses nothing"
	@echo "make run        shmbd in the foreground on /dev/shm/shmb-<user>, with what to type next"
	@echo "make ring-demo  the same kind of demo on the bare shared-memory ring"
	@echo "make install    PREFIX=$(PREFIX) DESTDIR=... installs shmbd, shmbctl, library, header,"
	@echo "                pkg-config file, systemd unit, man pages (MANDIR=$(MANDIR))"

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(TEST_INC) $(DEPFLAGS) -c $< -o $@

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# The internal archive: what shmbd, shmbctl and the tests share
# (docs/design/build.md, libraries); every symbol of shm/ and libclient/ stays
# visible to them.
$(BUILD)/libshmb-internal.a: $(CLIENT_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The static library a user links: the client objects joined into one and
# every name but shmb_* made local, so that ring_init, crc32c, lc_step...
# cannot clash with the program's own names.
$(BUILD)/obj/libshmb-client.o: $(CLIENT_OBJ)
	$(LD) -r -o $@.tmp $^
	$(OBJCOPY) --wildcard --keep-global-symbol='shmb_*' $@.tmp $@
	@rm -f $@.tmp

$(BUILD)/libshmb.a: $(BUILD)/obj/libshmb-client.o
	@rm -f $@
	ar rcs $@ $^

# -z defs: a name the library uses but nothing it links defines is an
# error here, not a surprise in a user's program at load time.
$(BUILD)/libshmb.so: $(CLIENT_OBJ) libclient/libshmb.map
	$(CC) -shared -Wl,-soname,libshmb.so.$(SOVER) -Wl,--version-script=libclient/libshmb.map \
		-Wl,-z,defs $(LDFLAGS) -o $@.$(VERSION) $(CLIENT_OBJ) $(LDLIBS)
	ln -sf libshmb.so.$(VERSION) $(BUILD)/libshmb.so.$(SOVER)
	ln -sf libshmb.so.$(VERSION) $@

$(BUILD)/shmb.pc: libclient/shmb.pc.in
	@mkdir -p $(BUILD)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' $< > $@

# The exit tracer (broker/exit.bpf.c): a BPF object, whatever the sanitizer
# flags, embedded into shmbd through a libbpf skeleton.  The kernel's uapi
# headers are found under the multiarch directory (asm/types.h).
BPF_CLANG ?= clang
# Debian installs bpftool in /usr/sbin, which a user's PATH often lacks
BPFTOOL   ?= $(shell command -v bpftool 2>/dev/null || echo /usr/sbin/bpftool)
BPF_CFLAGS := -g -O2 -target bpf -Wall -Werror -I/usr/include/$(shell $(CC) -dumpmachine)

$(BUILD)/bpf/exit.bpf.o: broker/exit.bpf.c
	@mkdir -p $(dir $@)
	$(BPF_CLANG) $(BPF_CFLAGS) -c $< -o $@

$(BUILD)/bpf/exit.skel.h: $(BUILD)/bpf/exit.bpf.o
	$(BPFTOOL) gen skeleton $< name exit_tracer > $@.tmp && mv $@.tmp $@

$(BUILD)/obj/broker/exit-bpf.o: $(BUILD)/bpf/exit.skel.h

$(BUILD)/shmbd: $(BROKER_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/libshmb-internal.a
	$(CC) $(LDFLAGS) -o $@ $^ -luring -lsodium -lbpf $(LDLIBS)

$(BUILD)/shmbctl: $(BUILD)/obj/tools/shmbctl.o $(BUILD)/obj/tools/shmbctl-admin.o \
		$(BUILD)/libshmb-internal.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/ring-demo: $(BUILD)/obj/tools/ring-demo.o $(BUILD)/libshmb-internal.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# ---- tests -------------------------------------------------------------------

# The link's pieces live in broker/, not in the libraries: the tests that
# use them link their objects by name.
O := $(BUILD)/obj

# the link's frames
$(BUILD)/tests/test-wire: $(O)/tests/unit/test-wire.o $(O)/broker/wire.o $(O)/tests/harness.o \
		$(BUILD)/libshmb-internal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -lcunit $(LDLIBS)

# the link's replay buffer
$(BUILD)/tests/test-replay: $(O)/tests/unit/test-replay.o $(O)/broker/replay.o $(O)/tests/harness.o \
		$(BUILD)/libshmb-internal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -lcunit $(LDLIBS)

# the link's protocol engine, two of them back to back
$(BUILD)/tests/test-linkproto: $(O)/tests/unit/test-linkproto.o $(O)/broker/linkproto.o \
		$(O)/broker/linkauth.o $(O)/broker/wire.o $(O)/broker/replay.o $(O)/tests/harness.o \
		$(BUILD)/libshmb-internal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -lcunit -lsodium $(LDLIBS)

# the state file on its own: its parser, reader and writer (no other broker module)
$(BUILD)/tests/test-state: $(BUILD)/obj/tests/unit/test-state.o $(BUILD)/obj/broker/state.o \
		$(BUILD)/obj/broker/log.o $(BUILD)/obj/tests/harness.o $(BUILD)/libshmb-internal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -lcunit $(LDLIBS)

# a lane's files on their own (nothing else of the broker)
$(BUILD)/tests/test-lanefile: $(O)/tests/unit/test-lanefile.o $(O)/broker/lanefile.o $(O)/tests/harness.o \
		$(BUILD)/libshmb-internal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -lcunit $(LDLIBS)

# a lane's writer and reader, over the fixture both lane tests share
$(BUILD)/tests/test-lane-rw $(BUILD)/tests/test-lane-edges: $(BUILD)/tests/%: $(O)/tests/unit/%.o \
		$(O)/tests/unit/lane-fx.o $(O)/tests/harness.o $(BUILD)/libshmb-internal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -lcunit $(LDLIBS)

# the register of lanes on its own, with the lane files (nothing else of the broker)
$(BUILD)/tests/test-lanereg: $(O)/tests/unit/test-lanereg.o $(O)/tests/unit/lane-env.o $(O)/broker/lanes.o $(O)/broker/lanefile.o \
		$(O)/tests/harness.o $(BUILD)/libshmb-internal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -lcunit $(LDLIBS)

# libshmb's lane writer against the register of lanes, in one process
$(BUILD)/tests/test-lanew: $(O)/tests/unit/test-lanew.o $(O)/tests/unit/lane-env.o $(O)/broker/lanes.o $(O)/broker/lanefile.o \
		$(O)/tests/harness.o $(BUILD)/libshmb-internal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -lcunit $(LDLIBS)

# the router's fan-out on its own, with its delivery tables (dlv.c);
# router-stubs.c stands in for the few functions of other broker modules
# they call
$(BUILD)/tests/test-router: $(BUILD)/obj/tests/unit/test-router.o $(BUILD)/obj/tests/unit/router-stubs.o \
		$(BUILD)/obj/broker/router.o $(BUILD)/obj/broker/dlv.o $(BUILD)/obj/broker/log.o \
		$(BUILD)/obj/tests/harness.o $(BUILD)/libshmb-internal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -lcunit $(LDLIBS)

# the link tests' misbehaving TCP proxy, tested on its own
$(BUILD)/tests/test-fault-proxy: $(BUILD)/obj/tests/unit/test-fault-proxy.o $(BUILD)/obj/tests/fault-proxy.o \
		$(BUILD)/obj/tests/harness.o $(BUILD)/libshmb-internal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -lcunit $(LDLIBS)

# the link's key and proof: libsodium's HMAC, in the broker
$(BUILD)/tests/test-linkauth: $(O)/tests/unit/test-linkauth.o $(O)/broker/linkauth.o $(O)/broker/wire.o \
		$(O)/tests/harness.o $(BUILD)/libshmb-internal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -lcunit -lsodium $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(BUILD)/obj/tests/harness.o $(BUILD)/libshmb-internal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -lcunit -luring $(LDLIBS)

$(BUILD)/tests/test-mp-%: $(BUILD)/obj/tests/mp/test-mp-%.o $(BUILD)/obj/tests/harness.o $(BUILD)/libshmb-internal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -lcunit -luring $(LDLIBS)

$(INT_TESTS:%=$(BUILD)/tests/%): $(BUILD)/tests/%: $(BUILD)/obj/tests/integration/%.o \
		$(BUILD)/obj/tests/broker-helper.o $(BUILD)/obj/tests/stream.o $(BUILD)/obj/tests/lane-client.o \
		$(BUILD)/obj/tests/harness.o $(BUILD)/libshmb-internal.a $(BUILD)/shmbd $(BUILD)/example-pubsub
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(filter %.o %.a,$^) -lcunit $(LDLIBS)

# two brokers linked through the fault proxy; a raw dialer from the engine
$(BUILD)/tests/test-links: $(O)/tests/fault-proxy.o $(O)/broker/linkproto.o $(O)/broker/linkauth.o \
		$(O)/broker/wire.o $(O)/broker/replay.o
$(BUILD)/tests/test-links: LDLIBS := $(BUILD)/libshmb-internal.a -lsodium $(LDLIBS)

# The API guide's example program, built the way a user builds it: public
# header and libshmb.so only.
$(BUILD)/example-pubsub: docs/example/pubsub.c libclient/include/shmb.h $(BUILD)/libshmb.so
	$(CC) -std=c11 -Wall -Wextra -Werror -Ilibclient/include $(EXTRA_CFLAGS) $< -o $@ \
		-L$(BUILD) -lshmb -Wl,-rpath,'$$ORIGIN' $(LDFLAGS)

# The same example linked statically against libshmb.a, as a user who ships
# one binary would: built by `make test` to prove the archive is enough on
# its own (shmb_* is all it offers).
$(BUILD)/example-pubsub-static: docs/example/pubsub.c libclient/include/shmb.h $(BUILD)/libshmb.a
	$(CC) -std=c11 -Wall -Wextra -Werror -Ilibclient/include $(EXTRA_CFLAGS) $< -o $@ \
		$(BUILD)/libshmb.a -lpthread $(LDFLAGS)

# A session owner that exits, crashes or waits to be killed on request
# (the crash-forensics tests in test-shmbctl.sh); built the same way.
$(BUILD)/tests/exit-client: tests/exit-client.c libclient/include/shmb.h $(BUILD)/libshmb.so
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -Wall -Wextra -Werror -Ilibclient/include $(EXTRA_CFLAGS) $< -o $@ \
		-L$(BUILD) -lshmb -lpthread -Wl,-rpath,'$$ORIGIN/..' $(LDFLAGS)

UNIT_BINS := $(UNIT_TESTS:%=$(BUILD)/tests/%)
INT_BINS  := $(INT_TESTS:%=$(BUILD)/tests/%)
MP_BINS   := $(MP_TESTS:%=$(BUILD)/tests/%)

test: all $(BUILD)/example-pubsub $(BUILD)/example-pubsub-static $(BUILD)/tests/exit-client $(UNIT_BINS) $(MP_BINS) $(INT_BINS)
	tests/run-tests.sh $(UNIT_BINS) $(MP_BINS) $(INT_BINS) "tests/integration/test-shmbctl.sh $(BUILD)" \
		"tests/integration/test-admin-cli.sh $(BUILD)" "tests/integration/test-links-cli.sh $(BUILD)" \
		"tests/integration/test-links-netns.sh $(BUILD)" \
		"tests/integration/test-bench-report.sh" "tests/integration/test-exports.sh $(BUILD)" \
		"tests/integration/test-lib-lanes.sh $(BUILD)"

test-unit: $(UNIT_BINS)
	tests/run-tests.sh $(UNIT_BINS)

# The broker's hostile-input suite (malformed control messages, clients
# scribbling over or truncating their segments), broker and client built
# the same way as the test: on lanes (the broker's default), then on the
# relay.
test-hostile-broker: $(INT_BINS)
	SHMB_TEST_ONLY=broker-hostile tests/run-tests.sh $(INT_BINS)
	SHMB_TEST_BROKER_ARGS=--no-lanes SHMB_TEST_ONLY=broker-hostile tests/run-tests.sh $(INT_BINS)

# The remote links between two brokers, with a shorter stream (ASan is
# slow): fed by lane publishers (the default), then by relay publishers.
test-links-short: $(BUILD)/tests/test-links
	SHMB_LINK_N=50000 tests/run-tests.sh $(BUILD)/tests/test-links
	SHMB_TEST_BROKER_ARGS=--no-lanes SHMB_LINK_N=50000 tests/run-tests.sh $(BUILD)/tests/test-links

# the direct data path through a real shmbd (ASan: the broker's lane
# register and the library's lane writer and reader under it; the links'
# reader of lanes, broker/lanes-bridge.c, runs in test-links-short)
test-lanes-int: $(BUILD)/tests/test-lanes $(BUILD)/tests/test-lib-lanes $(BUILD)/shmbctl
	tests/run-tests.sh $(BUILD)/tests/test-lanes $(BUILD)/tests/test-lib-lanes

asan:
	$(MAKE) BUILD=build-asan CFLAGS="-O1 -g -fno-omit-frame-pointer" \
		EXTRA_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined" \
		EXTRA_LDFLAGS="-fsanitize=address,undefined" test-unit test-hostile-broker test-links-short \
		test-lanes-int

# ThreadSanitizer (build-tsan/, shmbd included) over the tests whose own
# process runs threads: the lifecycle registry and machine, the futex
# wake-ups, the fault proxy, the client's connection thread against a
# real broker (test-redial, test-admin), and the lanes' writers, readers
# and sleepers in threads (test-lane-rw, test-lane-edges, test-laneset,
# and test-lib-lanes' threads case: libshmb on lanes in threads only;
# their words are shared through atomics, as between processes).  GCC cannot model fences
# (-Wtsan): the Dekker pairs of shm/futex.c stay unchecked.  A report from
# any process, shmbd and forked children included, lands in a report file
# and fails the run.  die_after_fork=0: test-admin's child, forked from a
# threaded test, opens a client of its own.
# Left out: test-broker, test-restart and test-links fork their publishers
# and subscribers from a test process that already runs threads (watchers,
# the fault proxy), and TSan refuses a new thread in such a child ("dup
# thread with used id", exit 66); test-broker's timing bounds (a back-off
# within 100 ms) and the bookkeeping window between a subscriber's two
# counters do not survive TSan's slowdown either.  test-mp-ring and
# test-uring-futex share memory between processes only, which TSan
# cannot see.
TSAN_TESTS := test-registry test-lifecycle test-futex test-fault-proxy test-redial test-admin \
              test-lane-rw test-lane-edges test-laneset

test-tsan: $(TSAN_TESTS:%=$(BUILD)/tests/%) $(BUILD)/tests/test-lib-lanes
	@d=$$(mktemp -d /tmp/shmb-tsan.XXXXXX) && chmod 1777 $$d && \
	TSAN_OPTIONS="log_path=$$d/report die_after_fork=0 $(TSAN_OPTIONS)" tests/run-tests.sh \
		$(TSAN_TESTS:%=$(BUILD)/tests/%) "$(BUILD)/tests/test-lib-lanes threads"; rc=$$?; \
	if [ -n "$$(ls $$d)" ]; then cat $$d/*; echo "ThreadSanitizer reports: see above"; rc=1; fi; \
	rm -rf $$d; exit $$rc

tsan:
	$(MAKE) BUILD=build-tsan CFLAGS="-O1 -g" EXTRA_CFLAGS="-fsanitize=thread -Wno-tsan" \
		EXTRA_LDFLAGS="-fsanitize=thread" test-tsan

# ---- benchmarks ----------------------------------------------------------------

BENCH_COMMON := $(BUILD)/obj/bench/common.o $(BUILD)/obj/bench/result.o $(BUILD)/obj/bench/shmbd.o

# the lanes' rows speak shmbd's lane messages through the tests' raw client
$(BUILD)/bench/bench-broker: $(BUILD)/obj/tests/lane-client.o

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(BENCH_COMMON) $(BUILD)/libshmb-internal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The peers a user would pick instead (issue 10), each built only where its
# library is installed (tools/install-deps.sh --bench); a peer that is
# missing is reported by run-bench.sh as skipped, with the install command.
PEER_LIBS_sockets  :=
PEER_LIBS_zmq      := -lzmq
PEER_LIBS_nng      := -lnng
PEER_LIBS_mosquitto := -lmosquitto
PEER_LIBS_iceoryx  := -liceoryx_binding_c
PEER_CFLAGS_iceoryx := -I/usr/include/iceoryx/v2.0.3
PEER_HAVE_sockets  := 1
PEER_HAVE_zmq      := $(shell pkg-config --exists libzmq 2>/dev/null && echo 1)
PEER_HAVE_nng      := $(shell test -f /usr/include/nng/nng.h && echo 1)
PEER_HAVE_mosquitto := $(shell pkg-config --exists libmosquitto 2>/dev/null && echo 1)
PEER_HAVE_iceoryx  := $(shell test -d /usr/include/iceoryx/v2.0.3/iceoryx_binding_c && echo 1)
PEERS := $(foreach p,sockets zmq nng mosquitto iceoryx,$(if $(and $(PEER_HAVE_$(p)),$(wildcard bench/peer-$(p).c)),$(p)))

$(BUILD)/obj/bench/peer-%.o: bench/peer-%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PEER_CFLAGS_$*) $(DEPFLAGS) -c $< -o $@

$(BUILD)/bench/peer-%: $(BUILD)/obj/bench/peer-%.o $(BENCH_COMMON) $(BUILD)/libshmb-internal.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(PEER_LIBS_$*) $(LDLIBS)

bench: all $(BENCHES:%=$(BUILD)/bench/%) $(PEERS:%=$(BUILD)/bench/peer-%)
	SHMB_BENCH_QUICK=$(QUICK) bench/run-bench.sh $(BUILD)

# ---- running ---------------------------------------------------------------------

demo: all
	tools/demo.sh $(BUILD)

ring-demo: $(BUILD)/ring-demo
	$(BUILD)/ring-demo

run: all
	tools/run-broker.sh $(BUILD)

# ---- install ---------------------------------------------------------------------

UNITDIR ?= $(PREFIX)/lib/systemd/system
MANDIR  ?= $(PREFIX)/share/man
MANPAGES := man/shmbctl.1 man/shmb.3 man/shmbd.8

install: all
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig \
		$(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man3 $(DESTDIR)$(MANDIR)/man8
	install -m 0755 $(BUILD)/shmbd $(DESTDIR)$(PREFIX)/sbin/
	install -m 0755 $(BUILD)/shmbctl $(DESTDIR)$(PREFIX)/bin/
	sed -e 's|@PREFIX@|$(PREFIX)|' tools/shmbd.service.in > $(DESTDIR)$(UNITDIR)/shmbd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/shmbd.service
	install -m 0755 $(BUILD)/libshmb.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libshmb.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libshmb.so.$(SOVER)
	ln -sf libshmb.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libshmb.so
	install -m 0644 $(BUILD)/libshmb.a $(DESTDIR)$(PREFIX)/lib/
	install -m 0644 libclient/include/shmb.h $(DESTDIR)$(PREFIX)/include/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' libclient/shmb.pc.in \
		> $(DESTDIR)$(PREFIX)/lib/pkgconfig/shmb.pc
	for p in $(MANPAGES); do \
		install -m 0644 $$p $(DESTDIR)$(MANDIR)/man$${p##*.}/ || exit 1; \
	done
	# one page per function of <shmb.h>, a .so link to shmb(3), so that
	# `man shmb_publish` finds it
	for f in $$(sed -n 's/^[a-z][^(]*[ *]\(shmb_[a-z_]*\)(.*/\1/p' libclient/include/shmb.h); do \
		echo '.so man3/shmb.3' > $(DESTDIR)$(MANDIR)/man3/$$f.3 && \
		chmod 0644 $(DESTDIR)$(MANDIR)/man3/$$f.3 || exit 1; \
	done
	# a library installed into the running system is found by the next program
	if [ -z "$(DESTDIR)" ] && command -v ldconfig >/dev/null; then ldconfig; fi

clean:
	rm -rf build build-asan build-tsan
