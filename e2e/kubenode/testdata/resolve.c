/* resolve: getaddrinfo(AF_UNSPEC) for each name on the command line, as an
 * application in a pod resolves, through whichever libc it is linked with
 * (built twice: musl-gcc -static, and gcc against Debian's glibc). One line
 * per name: "NAME ok ADDRESS" or "NAME fail REASON". Exit status 0. */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>

int main(int argc, char **argv) {
	for (int i = 1; i < argc; i++) {
		struct addrinfo hints, *res = NULL;
		memset(&hints, 0, sizeof hints);
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		int rc = getaddrinfo(argv[i], NULL, &hints, &res);
		if (rc != 0) {
			printf("%s fail %s\n", argv[i], gai_strerror(rc));
			continue;
		}
		char buf[INET6_ADDRSTRLEN] = "?";
		for (struct addrinfo *a = res; a; a = a->ai_next) {
			if (a->ai_family == AF_INET) {
				inet_ntop(AF_INET, &((struct sockaddr_in *)a->ai_addr)->sin_addr, buf, sizeof buf);
				break;
			}
		}
		printf("%s ok %s\n", argv[i], buf);
		freeaddrinfo(res);
	}
	fflush(stdout);
	return 0;
}
