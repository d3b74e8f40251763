from SpacingRegistrationWeb.app import main

main()
