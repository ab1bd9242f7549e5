from trustspace.connector.cli import main

main()
