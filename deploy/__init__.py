"""Deployment: the CloudFormation generator and the one-machine compose file."""
