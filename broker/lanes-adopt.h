/*
 * broker/lanes-adopt.h - lanes re-adopted by a restarted broker
 * (lanes-adopt.c; docs/design/data-path.md, section 7, "Re-adoption"),
 * and the register's numbers kept across restarts.
 */
#ifndef BROKER_LANES_ADOPT_H
#define BROKER_LANES_ADOPT_H

struct broker;

/* In a session's directory: its owners read lanes (the register has a
 * reader of it), so a restarted broker makes it a reader again even if
 * it held no lane.  Made with the reader, removed with the session. */
#define LANES_READER_MARK "lane-reader"

/*
 * At start-up with lanes on, once the sessions are re-adopted and the
 * register is made (hooks set, nothing in it): every lanes/ directory is
 * checked and taken back with its holders, or cut, removed or moved
 * aside into quarantine/ (each said in the log); the numbers the register
 * gives next start past every one a client may still know, and from then
 * on are kept in lanes/numbers as they are taken.  0 or -errno (the
 * numbers file cannot be made: lanes cannot run without it).
 */
int lanes_adopt(struct broker *b);

/* The broker stops: the numbers file is closed (it stays). */
void lanes_adopt_stop(void);

#endif
