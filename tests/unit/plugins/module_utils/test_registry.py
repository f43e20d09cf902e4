"""registry token URLs: the registry credentials go only over https, and only to the registry's own
host, Docker Hub's auth.docker.io or a listed token host; anonymous reads follow any http(s) realm."""

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.gpufleet.node.plugins.filter.registry import FilterModule
from ansible_collections.gpufleet.node.plugins.module_utils import _registry as reg

HUB = 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io"'
HUB_URL = "https://auth.docker.io/token?service=registry.docker.io&scope=repository%3Alibrary/ubuntu%3Apull"
SITE = "registry.example.internal:5000"
SITE_SCOPE = "scope=repository%3Ateam/pytorch%3Apull"


@pytest.mark.parametrize(
    ("header", "registry", "repository", "credentials", "hosts", "url"),
    [
        pytest.param(HUB, "registry-1.docker.io", "library/ubuntu", True, [], HUB_URL, id="docker-hub-default"),
        pytest.param(HUB, "registry-1.docker.io", "library/ubuntu", False, [], HUB_URL, id="docker-hub-anonymous"),
        pytest.param('Bearer realm="https://registry.example.internal:5000/token",service="site"',
                     SITE, "team/pytorch", True, [],
                     f"https://registry.example.internal:5000/token?service=site&{SITE_SCOPE}", id="own-host"),
        # docker_auth beside the registry: same host, another port
        pytest.param('Bearer realm="https://Registry.Example.Internal:5001/auth",service="site"',
                     SITE, "team/pytorch", True, [],
                     f"https://Registry.Example.Internal:5001/auth?service=site&{SITE_SCOPE}",
                     id="own-host-other-port"),
        pytest.param('Bearer realm="https://gitlab.example.internal/jwt/auth",service="container_registry"',
                     SITE, "team/pytorch", True, ["gitlab.example.internal"],
                     f"https://gitlab.example.internal/jwt/auth?service=container_registry&{SITE_SCOPE}",
                     id="listed-host"),
        pytest.param('Bearer realm="https://auth.example.internal:8443/token"',
                     SITE, "team/pytorch", True, ["auth.example.internal:8443"],
                     f"https://auth.example.internal:8443/token?{SITE_SCOPE}", id="listed-host-port-no-service"),
        pytest.param('Bearer realm="http://token.elsewhere.invalid/token",service="x"',
                     SITE, "team/pytorch", False, [],
                     f"http://token.elsewhere.invalid/token?service=x&{SITE_SCOPE}", id="anonymous-any-http-realm"),
        pytest.param('Bearer service="registry.docker.io", scope="repository:library/ubuntu:pull",'
                     ' realm="https://auth.docker.io/token"',
                     "registry-1.docker.io", "library/ubuntu", True, [], HUB_URL, id="param-order"),
        pytest.param('bearer REALM = "https://auth.docker.io/token" , Service=registry.docker.io',
                     "registry-1.docker.io", "library/ubuntu", True, [], HUB_URL, id="case-spaces-token-value"),
        pytest.param('Basic realm="site", Bearer realm="https://auth.docker.io/token",service="registry.docker.io"',
                     "registry-1.docker.io", "library/ubuntu", True, [], HUB_URL, id="bearer-after-basic"),
        pytest.param('Bearer realm="https://registry.example.internal/token?account=ci",service="a b&c"',
                     SITE, "team/pytorch", True, [],
                     f"https://registry.example.internal/token?account=ci&service=a%20b%26c&{SITE_SCOPE}",
                     id="realm-query-kept-values-encoded"),
        pytest.param('Bearer realm=https://auth.docker.io/token,service="registry.docker.io"',
                     "registry-1.docker.io", "library/ubuntu", True, [], HUB_URL, id="unquoted-realm"),
    ],
)
def test_token_url(header, registry, repository, credentials, hosts, url):
    assert reg.token_url(header, registry, repository, credentials, hosts) == url


@pytest.mark.parametrize(
    ("header", "registry", "credentials", "hosts", "words"),
    [
        pytest.param('Bearer realm="https://token.attacker.invalid/token",service="x"', SITE, True, [],
                     ["token.attacker.invalid is neither the registry's own host (registry.example.internal)",
                      "which lists nothing"], id="other-host-with-credentials"),
        pytest.param('Bearer realm="https://token.attacker.invalid/token",service="x"', SITE, True,
                     ["gitlab.example.internal"], ["which lists gitlab.example.internal"], id="other-host-not-listed"),
        pytest.param('Bearer realm="https://auth.example.internal:9999/token"', SITE, True,
                     ["auth.example.internal:8443"], ["auth.example.internal is neither"], id="listed-on-another-port"),
        # auth.docker.io is Docker Hub's; another registry does not get it for free
        pytest.param('Bearer realm="https://auth.docker.io/token"', SITE, True, [],
                     ["auth.docker.io is neither"], id="hub-token-host-for-another-registry"),
        # a look-alike name is another host
        pytest.param('Bearer realm="https://registry.example.internal.attacker.invalid/token"', SITE, True, [],
                     ["registry.example.internal.attacker.invalid is neither"], id="look-alike-host"),
        pytest.param('Bearer realm="https://registry.example.internal@attacker.invalid/token"', SITE, True, [],
                     ["not an http(s) URL of a host (without user info)"], id="user-info-trick"),
        pytest.param('Bearer realm="http://registry.example.internal:5000/token",service="x"', SITE, True, [],
                     ["it is plain http, even where it is the registry's own host"],
                     id="http-own-host-with-credentials"),
        pytest.param('Bearer realm="http://gitlab.example.internal/jwt/auth"', SITE, True,
                     ["gitlab.example.internal"], ["it is plain http"], id="http-listed-host-with-credentials"),
        pytest.param('Bearer realm="file:///etc/passwd"', SITE, False, [], ["not an http(s) URL"], id="file-realm"),
    ],
)
def test_credentials_are_refused(header, registry, credentials, hosts, words):
    with pytest.raises(ValueError, match="refus") as err:
        reg.token_url(header, registry, "team/pytorch", credentials, hosts)
    message = str(err.value)
    realm = reg.parse_challenges(header)[0][1]["realm"]
    assert realm in message, message
    for word in words:
        assert word in message, message
    if "user info" not in message and "http(s) URL" not in message:
        assert reg.RULE in message and "pytorch_image_registry_token_hosts" in message, message


@pytest.mark.parametrize(
    ("header", "words"),
    [
        pytest.param("", ["without a WWW-Authenticate header"], id="no-header"),
        pytest.param(None, ["without a WWW-Authenticate header"], id="none"),
        pytest.param('Basic realm="Registry Realm"', ["'Basic realm=\"Registry Realm\"'", "(basic)",
                                                      "not a Bearer token challenge"], id="basic"),
        pytest.param('Bearer service="registry.docker.io"', ["a Bearer challenge without a realm"], id="no-realm"),
        pytest.param('Bearer realm=""', ["a Bearer challenge without a realm"], id="empty-realm"),
        pytest.param('Bearer realm="https://a/t"service="x"', ["cannot read the WWW-Authenticate value"],
                     id="garbage"),
    ],
)
def test_challenges_that_give_no_token_url(header, words):
    with pytest.raises(ValueError) as err:
        reg.token_url(header, SITE, "team/pytorch", False, [])
    for word in words:
        assert word in str(err.value), str(err.value)


@pytest.mark.parametrize(
    ("header", "challenges"),
    [
        (HUB, [("bearer", {"realm": "https://auth.docker.io/token", "service": "registry.docker.io"})]),
        ('Bearer realm="a\\"b",error="insufficient_scope"',
         [("bearer", {"realm": 'a"b', "error": "insufficient_scope"})]),
        ("Basic dXNlcjpwYXNz==, Bearer realm=x", [("basic", {}), ("bearer", {"realm": "x"})]),
        ("Negotiate, Basic", [("negotiate", {}), ("basic", {})]),
    ],
)
def test_parse_challenges(header, challenges):
    assert reg.parse_challenges(header) == challenges


@pytest.mark.parametrize("hosts", ["auth.example.internal", ["https://auth.example.internal/token"], [42]])
def test_token_hosts_must_be_a_list_of_hosts(hosts):
    with pytest.raises(ValueError, match="pytorch_image_registry_token_hosts"):
        reg.token_url(HUB, "registry-1.docker.io", "library/ubuntu", True, hosts)


def test_filter_raises_ansible_filter_error():
    token_url = FilterModule().filters()["registry_token_url"]
    assert token_url(HUB, "registry-1.docker.io", "library/ubuntu", True) == HUB_URL
    with pytest.raises(AnsibleFilterError, match=r"token\.attacker\.invalid is neither"):
        token_url('Bearer realm="https://token.attacker.invalid/t"', SITE, "team/pytorch", True, [])
