/*
 * LD_PRELOAD shim for the phone tests (tests/it/phones/baresip.rs): binds a TCP socket that is
 * about to connect() without a local address to BIND_SRC_IP (port 0) first.
 *
 * baresip 1.0 (libre 1.1) connects its SIP TCP and TLS connections without binding them to
 * sip_listen's address, so the kernel picks the source. On loopback that is always 127.0.0.1,
 * the PBX's address in the tests' topology; a real phone has one address and its connections
 * come from it. With this shim they come from the phone's address (or, behind a simulated NAT,
 * from the NAT's public address while the phone's Via and Contact name its LAN address).
 * UDP sockets and sockets already bound are left alone.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	static int (*real_connect)(int, const struct sockaddr *, socklen_t);
	const char *ip = getenv("BIND_SRC_IP");
	struct sockaddr_in cur, src;
	socklen_t cur_len = sizeof(cur);
	int type = 0;
	socklen_t type_len = sizeof(type);

	if (!real_connect)
		real_connect = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");

	if (ip && addr && addr->sa_family == AF_INET
	    && getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) == 0 && type == SOCK_STREAM
	    && getsockname(fd, (struct sockaddr *)&cur, &cur_len) == 0 && cur.sin_family == AF_INET
	    && cur.sin_addr.s_addr == htonl(INADDR_ANY) && cur.sin_port == 0) {
		memset(&src, 0, sizeof(src));
		src.sin_family = AF_INET;
		if (inet_pton(AF_INET, ip, &src.sin_addr) == 1)
			(void)bind(fd, (struct sockaddr *)&src, sizeof(src));
	}

	return real_connect(fd, addr, len);
}
