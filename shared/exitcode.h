/*
 * exitcode.h: what sluice's exit status means, for supervisors (sluiced
 * itself, runit, systemd) deciding whether a restart can help.
 *
 * The values follow sysexits(3), which init systems and operators know.
 */
#ifndef SLUICE_EXITCODE_H
#define SLUICE_EXITCODE_H

#define EXIT_OK       0  /* clean stop (TERM/INT, finished work) */
#define EXIT_FOUND    1  /* sluiced --check found inconsistent rows */
#define EXIT_USAGE    64 /* bad command line: permanent */
#define EXIT_SOFTWARE 70 /* internal error (a bug): restart with backoff */
#define EXIT_TEMPFAIL 75 /* temporary failure (server down): restart */
#define EXIT_CONFIG   78 /* configuration error: permanent, don't loop */

#endif
