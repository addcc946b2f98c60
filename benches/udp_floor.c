// The kernel's share of a redirect look-up: a minimal UDP responder with callgate's I/O pattern
// (one blocking thread, recvmmsg with MSG_WAITFORONE, sendmmsg) and next to no user-space work
// (a 302 built from the INVITE's Via/From/To/Call-ID/CSeq lines, ACKs ignored, no parsing,
// no validation, no state). Whatever it costs per look-up is the floor any server with this I/O
// pattern pays on this machine; the rest of callgate's CPU per decision is its own work.
//
//   gcc -O2 -o /tmp/udp_floor benches/udp_floor.c && /tmp/udp_floor 5073 &
//   sipp 127.0.0.1:5073 -sf benches/anchors/sipp-redirect-uac.xml -inf CALLERS.csv
//        -m 100000 -r 10000 -l 20000 -i 127.0.0.1 -nostdin      (one command)
//   then read its CPU time: the first field of /proc/PID/schedstat (ns), before and after.
//
// Not a SIP server: it trusts its input and is for measurement on loopback only.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define BATCH 16
static char in[BATCH][65536], out[BATCH][2048];

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: %s PORT\n", argv[0]); return 2; }
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (bind(s, (void *)&a, sizeof a)) { perror("bind"); return 1; }
  struct mmsghdr h[BATCH], o[BATCH];
  struct iovec iv[BATCH], ov[BATCH];
  struct sockaddr_in from[BATCH];
  for (;;) {
    for (int i = 0; i < BATCH; i++) {
      iv[i].iov_base = in[i]; iv[i].iov_len = sizeof in[i] - 1;
      memset(&h[i], 0, sizeof h[i]);
      h[i].msg_hdr.msg_iov = &iv[i]; h[i].msg_hdr.msg_iovlen = 1;
      h[i].msg_hdr.msg_name = &from[i]; h[i].msg_hdr.msg_namelen = sizeof from[i];
    }
    int n = recvmmsg(s, h, BATCH, MSG_WAITFORONE, 0), k = 0;
    for (int i = 0; i < n; i++) {
      char *m = in[i];
      m[h[i].msg_len] = 0;
      if (strncmp(m, "INVITE ", 7)) continue; // ACK: nothing to answer
      char *w = out[k], *end = out[k] + sizeof out[k] - 128;
      w += sprintf(w, "SIP/2.0 302 Moved Temporarily\r\n");
      for (char *l = strstr(m, "\r\n"); l && l[2] != '\r' && w < end;) {
        l += 2;
        char *e = strstr(l, "\r\n");
        if (!e || e - l > end - w) break;
        if (!strncmp(l, "Via:", 4) || !strncmp(l, "From:", 5) || !strncmp(l, "Call-ID:", 8) || !strncmp(l, "CSeq:", 5)) {
          memcpy(w, l, e - l + 2); w += e - l + 2;
        } else if (!strncmp(l, "To:", 3)) {
          memcpy(w, l, e - l); w += e - l; w += sprintf(w, ";tag=floor\r\n");
        }
        l = e;
      }
      w += sprintf(w, "Contact: <sip:101@127.0.0.1:5080>\r\nContent-Length: 0\r\n\r\n");
      ov[k].iov_base = out[k]; ov[k].iov_len = w - out[k];
      memset(&o[k], 0, sizeof o[k]);
      o[k].msg_hdr.msg_iov = &ov[k]; o[k].msg_hdr.msg_iovlen = 1;
      o[k].msg_hdr.msg_name = &from[i]; o[k].msg_hdr.msg_namelen = sizeof from[i];
      k++;
    }
    if (k) sendmmsg(s, o, k, 0);
  }
}
