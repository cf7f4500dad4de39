/*
 * daemon.h: the parts of sluiced that make it a well-behaved Unix daemon:
 * the pidfile (one supervisor per pidfile), detaching from the terminal,
 * and dropping root privileges.
 */
#ifndef SLUICE_DAEMON_H
#define SLUICE_DAEMON_H

#include <sys/types.h>

struct pidfh;

/*
 * Open and lock the pidfile `path` (libbsd pidfile_open). Returns the
 * handle, or NULL: then *otherpid is the pid of the sluiced that holds
 * it (> 0) or 0 with errno set for any other failure. The caller writes it
 * with pidfile_write() once its final pid is known (after daemonize).
 */
struct pidfh *daemon_pidfile_open(const char *path, pid_t *otherpid);

/*
 * Detach: fork, setsid, fork again, chdir("/"), stdin, stdout and stderr
 * to /dev/null. Returns 0 in the daemon, -1 with errno set when it
 * can't; the parents exit 0. Relative paths must be resolved before.
 */
int daemon_detach(void);

/*
 * Resolve `user` to uid/gid. Returns 0, or -1 with a message in err
 * (unknown user).
 */
int daemon_lookup_user(const char *user, uid_t *uid, gid_t *gid, char *err,
                       size_t errlen);

/*
 * Become uid/gid with user's supplementary groups: initgroups, setgid,
 * setuid, and a check that root can't be regained. Returns 0, or -1 with
 * a message in err.
 */
int daemon_drop_privileges(const char *user, uid_t uid, gid_t gid, char *err,
                           size_t errlen);

#endif
