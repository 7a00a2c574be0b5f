/*
 * LD_PRELOAD shim for running vtpm's daemon under valgrind, which does not implement
 * the seccomp system call (valgrind 3.19: "unhandled amd64-linux syscall: 317"), so
 * the daemon would stop at start-up. seccomp() through syscall(2) reports success
 * without installing a filter; every other call is passed on unchanged. This is what
 * `--seccomp action=none` does, which Debian's swtpm gets instead; the benchmark uses
 * the shim only for a daemon that does not advertise "cmdarg-seccomp".
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <sys/syscall.h>

long syscall(long number, ...)
{
    static long (*next)(long, ...);
    long arg[6];
    va_list ap;

    va_start(ap, number);
    for (int i = 0; i < 6; i++)
        arg[i] = va_arg(ap, long);
    va_end(ap);
    if (number == SYS_seccomp)
        return 0;
    if (!next)
        next = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    return next(number, arg[0], arg[1], arg[2], arg[3], arg[4], arg[5]);
}
