"""An AMQP 1.0 client nobody in this project wrote: Qpid Proton's blocking API, used by the
router tests to see the router as real clients see it.

usage: amqp_client.py [--tls CA CERT KEY] [--mechs MECHS] HOST:PORT COMMAND [ARGS]
  attach ADDRESS            connect, attach a receiver and a sender, print how SASL went
  send ADDRESS N [TIMEOUT]  send N messages "msg-<i>", each awaited until settled
  burst ADDRESS N [TIMEOUT] send N messages without waiting, then await every outcome
  recv ADDRESS N [TIMEOUT]  receive up to N messages, accept each, print their bodies
                            (stops after TIMEOUT seconds without a message)
  reject ADDRESS N [TIMEOUT] like recv, but reject each message
Lines printed: "sasl MECH", "attached", "settled <i> <outcome>", "got <body>", "error <what>".
Exit status 0 when the command completed, 1 otherwise.
"""
import sys

from proton import Message, SSLDomain, SASL, Timeout
from proton.utils import BlockingConnection


def main(argv):
    tls = None
    mechs = None
    while argv and argv[0].startswith("--"):
        if argv[0] == "--tls":
            tls, argv = argv[1:4], argv[4:]
        elif argv[0] == "--mechs":
            mechs, argv = argv[1], argv[2:]
        else:
            raise SystemExit("unknown option " + argv[0])
    hostport, cmd, args = argv[0], argv[1], argv[2:]
    kwargs = {}
    url = "amqp://" + hostport
    if tls:
        domain = SSLDomain(SSLDomain.MODE_CLIENT)
        domain.set_trusted_ca_db(tls[0])
        domain.set_peer_authentication(SSLDomain.VERIFY_PEER)
        domain.set_credentials(tls[1], tls[2], None)
        kwargs["ssl_domain"] = domain
        url = "amqps://" + hostport
    if mechs:
        kwargs["allowed_mechs"] = mechs
    timeout = float(args[2]) if len(args) > 2 else 20.0
    conn = BlockingConnection(url, timeout=timeout, **kwargs)
    try:
        print("sasl", SASL(conn.conn.transport).mech or "none", flush=True)
        if cmd == "attach":
            # Distinct link names: Proton names both links after the address, and the
            # router's AMQP stack (fe2o3-amqp) ends a session that reuses a link name.
            conn.create_receiver(args[0], name="probe-in")
            conn.create_sender(args[0], name="probe-out")
            print("attached", flush=True)
        elif cmd == "send":
            snd = conn.create_sender(args[0])
            for i in range(int(args[1])):
                # error_states=[]: print a rejected or released outcome instead of raising.
                d = snd.send(Message(body="msg-%d" % i), timeout=timeout, error_states=[])
                print("settled", i, d.remote_state, flush=True)
        elif cmd == "burst":
            snd = conn.create_sender(args[0])
            # The link itself, not BlockingSender.send, which waits for each settlement.
            sent = [snd.link.send(Message(body="msg-%d" % i)) for i in range(int(args[1]))]
            conn.wait(lambda: all(d.settled for d in sent), timeout=timeout, msg="outcomes")
            for i, d in enumerate(sent):
                print("settled", i, d.remote_state, flush=True)
        elif cmd in ("recv", "reject"):
            rcv = conn.create_receiver(args[0], credit=10)
            print("attached", flush=True)
            for _ in range(int(args[1])):
                try:
                    m = rcv.receive(timeout=timeout)
                except Timeout:
                    break
                if cmd == "recv":
                    rcv.accept()
                else:
                    rcv.reject()
                print("got", m.body, flush=True)
        else:
            raise SystemExit("unknown command " + cmd)
    finally:
        conn.close()


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except SystemExit:
        raise
    except Exception as e:  # the test reads this line
        print("error", type(e).__name__, e, flush=True)
        sys.exit(1)
