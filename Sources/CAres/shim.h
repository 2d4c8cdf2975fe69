// c-ares, the asynchronous DNS resolver (Debian libc-ares-dev), used by
// SIPTransport's DNSClient.
#include <ares.h>
#include <arpa/nameser.h>
#include <poll.h>
#include <sys/eventfd.h>
