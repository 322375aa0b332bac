/* resolve: getaddrinfo(AF_UNSPEC) for each name on the command line, as an
 * application in a pod resolves, through whichever libc it is linked with
 * (built twice: musl-gcc -static, and gcc against Debian's glibc). One line
 * per name: "NAME ok MS ADDRESS" or "NAME fail MS REASON", MS the lookup's
 * wall time in milliseconds (CLOCK_MONOTONIC around getaddrinfo). Exit
 * status 0. */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <netinet/in.h>

int main(int argc, char **argv) {
	for (int i = 1; i < argc; i++) {
		struct addrinfo hints, *res = NULL;
		memset(&hints, 0, sizeof hints);
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		int rc = getaddrinfo(argv[i], NULL, &hints, &res);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
		if (rc != 0) {
			printf("%s fail %.1f %s\n", argv[i], ms, gai_strerror(rc));
			continue;
		}
		char buf[INET6_ADDRSTRLEN] = "?";
		for (struct addrinfo *a = res; a; a = a->ai_next) {
			if (a->ai_family == AF_INET) {
				inet_ntop(AF_INET, &((struct sockaddr_in *)a->ai_addr)->sin_addr, buf, sizeof buf);
				break;
			}
		}
		printf("%s ok %.1f %s\n", argv[i], ms, buf);
		freeaddrinfo(res);
	}
	fflush(stdout);
	return 0;
}
