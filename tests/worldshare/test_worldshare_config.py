"""Which settings a WorldShare call needs: a create needs the library's billing address, a read
of an exported request does not (institutions from before the setting keep being polled)."""

import pytest
from cryptography.fernet import Fernet

from app.institutions.models import Institution
from app.institutions.secrets import SecretBox
from app.worldshare.config import NotConfigured, worldshare_config

BOX = SecretBox([Fernet.generate_key()])


def institution(**settings: object) -> Institution:
    return Institution(
        code="UNIV",
        name="University",
        worldshare_base_url="https://128807.share.worldcat.org/ILL",
        worldshare_token_url="https://oauth.oclc.org/token",
        worldshare_scope="WorldShareILL",
        worldshare_key_encrypted=BOX.encrypt("key"),
        worldshare_secret_encrypted=BOX.encrypt("secret"),
        worldshare_institution_id="128807",
        **settings,
    )


def test_a_create_needs_the_billing_address():
    with pytest.raises(NotConfigured) as caught:
        worldshare_config(institution(), BOX, to_export=True)

    assert str(caught.value) == (
        "WorldShare configuration incomplete: worldshare.billing_address not set (institution UNIV)"
    )


def test_a_read_does_not_need_the_billing_address():
    config = worldshare_config(institution(), BOX)

    assert config.requester.billing_address is None
    assert config.requester.institution_id == "128807"


def test_the_librarys_settings_reach_the_requester():
    config = worldshare_config(
        institution(
            worldshare_billing_address={"address1": "1 Library Walk"},
            worldshare_lenders=[148456],
            worldshare_billing_types=["IFM"],
        ),
        BOX,
        to_export=True,
    )

    assert config.requester.billing_address == {"address1": "1 Library Walk"}
    assert (config.requester.lenders, config.requester.billing_types) == ((148456,), ("IFM",))
