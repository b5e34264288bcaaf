"""A Neutron stand-in for tests/nova/harness.py: NOT Neutron, and the only piece of the test
Nova that is not the real thing.

nova-api looks up the ports and security groups of every server it shows (GET /servers/{id},
/servers/detail, /servers?...) and answers 500 without a network service. Servers in the tests
are booted with `"networks": "none"`, so no port ever exists and empty lists are the true answer.
Every collection GET returns an empty list; everything else is 404.

Usage: neutron_stub.py --fd FD   (a bound socket passed by the harness, so the port cannot be
taken between choosing and binding it) or neutron_stub.py PORT.
"""
import json
import re
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COLLECTION = re.compile(r'^/(?:v2\.0/)?([a-z_-]+?)(?:\.json)?$')


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split('?', 1)[0]
        if path in ('/', ''):
            return self._send(200, {'versions': [
                {'id': 'v2.0', 'status': 'CURRENT', 'links': []}]})
        m = COLLECTION.match(path)
        if m:
            return self._send(200, {m.group(1).replace('-', '_'): []})
        return self._send(404, {'NeutronError': {
            'type': 'NotFound', 'message': path, 'detail': ''}})

    def do_DELETE(self):
        return self._send(404, {'NeutronError': {
            'type': 'NotFound', 'message': self.path, 'detail': ''}})

    do_POST = do_PUT = do_DELETE

    def log_message(self, *args):
        pass


def main():
    if len(sys.argv) == 3 and sys.argv[1] == '--fd':
        server = ThreadingHTTPServer(('127.0.0.1', 0), Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = socket.socket(fileno=int(sys.argv[2]))
        server.server_address = server.socket.getsockname()
        server.server_activate()
    else:
        port = int(sys.argv[1]) if len(sys.argv) > 1 else 19696
        server = ThreadingHTTPServer(('127.0.0.1', port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == '__main__':
    main()
