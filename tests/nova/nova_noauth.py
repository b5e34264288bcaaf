"""A paste filter that stands in for keystonemiddleware's authtoken in the noauth nova-api of
tests/nova/harness.py (nova 34 removed [api] auth_strategy = noauth2). TEST USE ONLY.

Token format, like the old nova noauth2 and placement's noauth2:
  X-Auth-Token: <user_id>:<project_id>   (the project defaults to the user id)
Roles come from an X-Roles header when the client sends one, else 'admin,member,reader' for user
`admin` and 'member,reader' for anyone else. No token: 401. It sets the X-User-Id, X-Project-Id
and X-Roles headers that nova.api.auth.NovaKeystoneContext reads next in the pipeline, so
everything after it (policy, the API itself) is Nova's own code.
"""
import webob.dec
import webob.exc


class NoAuthMiddleware(object):
    def __init__(self, application):
        self.application = application

    @webob.dec.wsgify
    def __call__(self, req):
        token = req.headers.get('X-Auth-Token')
        if not token:
            return webob.exc.HTTPUnauthorized()
        user_id, _sep, project_id = token.partition(':')
        project_id = project_id or user_id
        roles = req.headers.get('X-Roles')
        if not roles:
            roles = ('admin,member,reader' if user_id == 'admin'
                     else 'member,reader')
        req.headers['X-User-Id'] = user_id
        req.headers['X-User-Name'] = user_id
        req.headers['X-Project-Id'] = project_id
        req.headers['X-Project-Name'] = project_id
        req.headers['X-Roles'] = roles
        req.headers['X-Identity-Status'] = 'Confirmed'
        return self.application


def filter_factory(global_conf, **local_conf):
    return NoAuthMiddleware
