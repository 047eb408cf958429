/*
 * smolsrv: a one-process TCP service for NetBSD amd64, with no libc: answers HTTP on
 * port 80 (any request: "200 OK", a short text) and greets every connection on port 7
 * with a banner line. Started by a service's /etc/rc (stdout: the console); says
 * "smolsrv: listening" once both sockets listen.
 */
#include "netbsd.h"

NETBSD_IDENT_NOTE;
__asm__(START_ASM);

struct sockaddr_in {
	unsigned char len, family;
	unsigned short port;	/* network order */
	unsigned int addr;
	char zero[8];
};

struct pollfd {
	int fd;
	short events, revents;
};

static const char http_answer[] =
	"HTTP/1.0 200 OK\r\n"
	"Content-Type: text/plain\r\n"
	"Content-Length: 26\r\n"
	"Connection: close\r\n"
	"\r\n"
	"hello from NetBSD smolsrv\n";
static const char banner[] = "smolsrv banner: NetBSD says hello\r\n";

static int listen_on(unsigned short port)
{
	struct sockaddr_in sa;
	int one = 1;
	long s = sys3(SYS_socket, AF_INET, SOCK_STREAM, 0);

	if (s < 0)
		die(1, "smolsrv: socket", s);
	sys6(SYS_setsockopt, s, SOL_SOCKET, SO_REUSEADDR, (long)&one, sizeof(one), 0);
	memset(&sa, 0, sizeof(sa));
	sa.len = sizeof(sa);
	sa.family = AF_INET;
	sa.port = (unsigned short)((port >> 8) | (port << 8));
	long r = sys3(SYS_bind, s, &sa, sizeof(sa));
	if (r < 0)
		die(1, "smolsrv: bind", r);
	r = sys2(SYS_listen, s, 16);
	if (r < 0)
		die(1, "smolsrv: listen", r);
	return (int)s;
}

void start(void);
void start(void)
{
	struct pollfd fds[2];
	char request[2048];

	fds[0].fd = listen_on(80);
	fds[1].fd = listen_on(7);
	say(1, "smolsrv: listening on tcp 80 (http) and 7 (banner)\n");
	for (;;) {
		fds[0].events = fds[1].events = POLLIN;
		fds[0].revents = fds[1].revents = 0;
		if (sys3(SYS_poll, fds, 2, -1) <= 0)
			continue;
		for (int i = 0; i < 2; i++) {
			if (!(fds[i].revents & POLLIN))
				continue;
			long c = sys3(SYS_accept, fds[i].fd, 0, 0);
			if (c < 0)
				continue;
			if (i == 0) {
				/* the request line and headers: one read is enough for a probe */
				sys3(SYS_read, c, request, sizeof(request));
				sys3(SYS_write, c, http_answer, sizeof(http_answer) - 1);
			} else {
				sys3(SYS_write, c, banner, sizeof(banner) - 1);
			}
			sys1(SYS_close, c);
		}
	}
}
