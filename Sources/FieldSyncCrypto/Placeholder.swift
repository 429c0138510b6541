import CSodium
import FieldSyncCore
