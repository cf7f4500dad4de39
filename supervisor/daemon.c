/*
 * daemon.c: pidfile, detaching and privilege drop for sluiced (see
 * daemon.h). The order sluiced uses is the BSD one: open and lock the
 * pidfile while still in the foreground (so a second sluiced fails where
 * the operator sees it), detach, create the stats segment, write the
 * pidfile, then drop privileges.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bsd/libutil.h>

#include "supervisor/daemon.h"

struct pidfh *
daemon_pidfile_open(const char *path, pid_t *otherpid)
{
    struct pidfh *pfh;

    *otherpid = 0;
    pfh = pidfile_open(path, 0644, otherpid);
    if (pfh == NULL && errno != EEXIST)
        *otherpid = 0;
    return pfh;
}

int
daemon_detach(void)
{
    pid_t pid;
    int fd;

    if ((pid = fork()) < 0)
        return -1;
    if (pid > 0)
        _exit(0);
    if (setsid() < 0)
        return -1;
    /* A second fork: the daemon is no session leader and can never
     * acquire a controlling terminal. */
    if ((pid = fork()) < 0)
        return -1;
    if (pid > 0)
        _exit(0);
    if (chdir("/") < 0)
        return -1;
    if ((fd = open("/dev/null", O_RDWR)) < 0)
        return -1;
    dup2(fd, STDIN_FILENO);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    if (fd > STDERR_FILENO)
        close(fd);
    return 0;
}

int
daemon_lookup_user(const char *user, uid_t *uid, gid_t *gid, char *err,
                   size_t errlen)
{
    struct passwd *pw;

    errno = 0;
    if ((pw = getpwnam(user)) == NULL) {
        snprintf(err, errlen, "user: unknown user '%s'", user);
        return -1;
    }
    *uid = pw->pw_uid;
    *gid = pw->pw_gid;
    return 0;
}

int
daemon_drop_privileges(const char *user, uid_t uid, gid_t gid, char *err,
                       size_t errlen)
{
    if (getuid() == uid && geteuid() == uid)
        return 0; /* already that user: nothing to drop */
    if (geteuid() != 0) {
        snprintf(err, errlen,
                 "user = %s: only root can change user (running as uid %d)",
                 user, (int)geteuid());
        return -1;
    }
    if (initgroups(user, gid) < 0 || setgid(gid) < 0 || setuid(uid) < 0) {
        snprintf(err, errlen, "user = %s: cannot switch: %s", user,
                 strerror(errno));
        return -1;
    }
    if (uid != 0 && (setuid(0) == 0 || seteuid(0) == 0)) {
        snprintf(err, errlen, "user = %s: root could be regained", user);
        return -1;
    }
    return 0;
}
