"""ISO 18626 (v1.2) codec for the Alma channel: pure functions over bytes.

``messages`` the vocabulary and message types; ``parsing`` reads what Alma sends, safely;
``validation`` checks against the bundled XSD; ``outgoing`` writes what the bridge sends
(confirmations, supplyingAgencyMessages, ``supplier_message``); ``profile`` holds Alma's habits.
The names below are re-exported so that ``from app.alma.iso18626 import X`` keeps working.
"""

from app.alma.iso18626.messages import CONFIRMATIONS as CONFIRMATIONS
from app.alma.iso18626.messages import ISO18626_NS as ISO18626_NS
from app.alma.iso18626.messages import ISO18626_VERSION as ISO18626_VERSION
from app.alma.iso18626.messages import Action as Action
from app.alma.iso18626.messages import AgencyId as AgencyId
from app.alma.iso18626.messages import AgencyMessage as AgencyMessage
from app.alma.iso18626.messages import AnyConfirmation as AnyConfirmation
from app.alma.iso18626.messages import CitationFields as CitationFields
from app.alma.iso18626.messages import Confirmation as Confirmation
from app.alma.iso18626.messages import ErrorType as ErrorType
from app.alma.iso18626.messages import Header as Header
from app.alma.iso18626.messages import HeaderEcho as HeaderEcho
from app.alma.iso18626.messages import IncomingMessage as IncomingMessage
from app.alma.iso18626.messages import IsoMessageError as IsoMessageError
from app.alma.iso18626.messages import IsoRequest as IsoRequest
from app.alma.iso18626.messages import MessageKind as MessageKind
from app.alma.iso18626.messages import MessageStatus as MessageStatus
from app.alma.iso18626.messages import PatronFields as PatronFields
from app.alma.iso18626.messages import ReasonForMessage as ReasonForMessage
from app.alma.iso18626.messages import RequestConfirmation as RequestConfirmation
from app.alma.iso18626.messages import RequestingAgencyMessage as RequestingAgencyMessage
from app.alma.iso18626.messages import (
    RequestingAgencyMessageConfirmation as RequestingAgencyMessageConfirmation,
)
from app.alma.iso18626.messages import ReturnAddress as ReturnAddress
from app.alma.iso18626.messages import ServiceType as ServiceType
from app.alma.iso18626.messages import Status as Status
from app.alma.iso18626.messages import SupplyingAgencyMessage as SupplyingAgencyMessage
from app.alma.iso18626.messages import (
    SupplyingAgencyMessageConfirmation as SupplyingAgencyMessageConfirmation,
)
from app.alma.iso18626.outgoing import encode_confirmation as encode_confirmation
from app.alma.iso18626.outgoing import encode_error_confirmation as encode_error_confirmation
from app.alma.iso18626.outgoing import encode_request_confirmation as encode_request_confirmation
from app.alma.iso18626.outgoing import (
    encode_requesting_agency_message_confirmation as encode_requesting_agency_message_confirmation,
)
from app.alma.iso18626.outgoing import (
    encode_supplying_agency_message as encode_supplying_agency_message,
)
from app.alma.iso18626.outgoing import (
    encode_supplying_agency_message_confirmation as encode_supplying_agency_message_confirmation,
)
from app.alma.iso18626.outgoing import supplier_message as supplier_message
from app.alma.iso18626.parsing import MAX_MESSAGE_BYTES as MAX_MESSAGE_BYTES
from app.alma.iso18626.parsing import parse_message as parse_message
from app.alma.iso18626.profile import ALMA_DEFAULT as ALMA_DEFAULT
from app.alma.iso18626.profile import DEFAULT_PROFILE as DEFAULT_PROFILE
from app.alma.iso18626.profile import PROFILES as PROFILES
from app.alma.iso18626.profile import AlmaProfile as AlmaProfile
from app.alma.iso18626.validation import IsoSchemaError as IsoSchemaError
from app.alma.iso18626.validation import validate as validate
